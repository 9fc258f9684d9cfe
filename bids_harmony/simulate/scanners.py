"""The five scanners of the paper's Table 1 (OASIS-3), as the simulator images with them.

Sequence parameters are Table 1's, with METHOD.md's correction for the Vision 1.5 T
(the 1990s MP-RAGE of OASIS-1: TR 9.7 ms between excitations, TI 20 ms from the inversion to
the first excitation, TD 200 ms, TE 4 ms, flip 10 deg, 128 sagittal 1.25 mm partitions).
What Table 1 does not give is assumed and marked so (``assumed``): echo spacings of the 3 T
protocols (7.0-7.1 ms, typical of Siemens product MPRAGE), the Vida inversion time (0.9 s, as
the same-generation mMR protocol) and every site effect (SNR, transmit and receive fields,
receiver gain). Sidecars carry only what a real scanner would write and Table 1 knows;
the assumed values are recorded in the ground-truth derivatives.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .mprage import MprageProtocol


@dataclass(frozen=True)
class SiteEffects:
    """What makes two scanners of the same model and protocol differ (all assumed)."""

    #: mean white-matter signal over the noise sd of each quadrature channel
    snr: float
    #: relative transmit field B1+ (flip angle scale): calibration, dielectric centre
    #: excess, its spatial width, and a left-right / anterior-posterior tilt per 100 mm
    transmit_calibration: float
    transmit_centre_gain: float
    transmit_width_mm: float
    transmit_tilt: tuple[float, float, float]
    #: relative receive field B1-: centre brightening (standing wave) and peripheral
    #: brightening near the elements of an array coil, plus a tilt per 100 mm
    receive_centre_gain: float
    receive_periphery_gain: float
    receive_tilt: tuple[float, float, float]
    #: arbitrary scale of the stored intensities
    receiver_gain: float
    #: centre of the field patterns relative to the isocentre (mm, RAS)
    field_offset_mm: tuple[float, float, float]


@dataclass(frozen=True)
class Scanner:
    key: str
    domain: str
    manufacturer: str
    model: str
    field_strength: float
    #: partitions (left-right) x phase x read, as Table 1 lists them
    matrix: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    protocol: MprageProtocol
    inversion_time_known: bool
    serial_number: str
    station_name: str
    institution: str
    site: SiteEffects

    def sidecar(self) -> dict:
        """BIDS metadata a DICOM converter would write for this scanner (seconds, degrees)."""
        protocol = self.protocol
        metadata = {
            "Manufacturer": self.manufacturer,
            "ManufacturersModelName": self.model,
            "MagneticFieldStrength": self.field_strength,
            "DeviceSerialNumber": self.serial_number,
            "StationName": self.station_name,
            "InstitutionName": self.institution,
            "MRAcquisitionType": "3D",
            "PulseSequenceType": "MPRAGE",
            "ScanningSequence": "GR_IR",
            "SequenceVariant": "SP_MP",
            "RepetitionTimePreparation": round(protocol.repetition_time_preparation, 6),
            "RepetitionTimeExcitation": round(protocol.echo_spacing, 6),
            "EchoTime": protocol.echo_time,
            "FlipAngle": protocol.flip_angle,
        }
        if self.inversion_time_known:
            metadata["InversionTime"] = protocol.inversion_time
        return metadata

    def simulation_record(self) -> dict:
        """Everything the simulator used for this scanner, assumed values included."""
        return {
            "Scanner": self.key,
            "Domain": self.domain,
            "Protocol": asdict(self.protocol),
            "RecoveryDelayTD": round(self.protocol.recovery_delay, 6),
            "SiteEffects": asdict(self.site),
        }


def _siemens_3t(ti: float, tr: float, te: float, flip: float, spacing: float) -> MprageProtocol:
    return MprageProtocol(
        repetition_time_preparation=tr,
        inversion_time=ti,
        echo_time=te,
        flip_angle=flip,
        echo_spacing=spacing,
        excitations_per_inversion=176,
    )


_TRIO_PROTOCOL = _siemens_3t(ti=1.0, tr=2.4, te=0.0032, flip=8.0, spacing=0.0071)
_VIDA_MMR_PROTOCOL = _siemens_3t(ti=0.9, tr=2.3, te=0.0030, flip=9.0, spacing=0.0070)
_VISION_PROTOCOL = MprageProtocol(
    repetition_time_preparation=0.020 + 128 * 0.0097 + 0.200,
    inversion_time=0.020,
    echo_time=0.004,
    flip_angle=10.0,
    echo_spacing=0.0097,
    excitations_per_inversion=128,
    inversion_time_reference="first",
)

SCANNERS: dict[str, Scanner] = {
    scanner.key: scanner
    for scanner in (
        Scanner(
            key="target",
            domain="Target domain",
            manufacturer="Siemens",
            model="TrioTim",
            field_strength=3.0,
            matrix=(176, 256, 256),
            voxel_size=(1.0, 1.0, 1.0),
            protocol=_TRIO_PROTOCOL,
            inversion_time_known=True,
            serial_number="35021",
            station_name="TRIO-A",
            institution="Simulated Site A",
            site=SiteEffects(
                snr=30.0,
                transmit_calibration=1.0,
                transmit_centre_gain=0.30,
                transmit_width_mm=65.0,
                transmit_tilt=(0.02, -0.03, 0.0),
                receive_centre_gain=0.25,
                receive_periphery_gain=0.10,
                receive_tilt=(0.03, 0.04, -0.02),
                receiver_gain=900.0,
                field_offset_mm=(2.0, -5.0, 8.0),
            ),
        ),
        Scanner(
            key="domain1",
            domain="Domain 1",
            manufacturer="Siemens",
            model="MAGNETOM Vida",
            field_strength=3.0,
            matrix=(176, 240, 256),
            voxel_size=(1.2, 1.05, 1.05),
            protocol=_VIDA_MMR_PROTOCOL,
            inversion_time_known=False,
            serial_number="175832",
            station_name="VIDA-B",
            institution="Simulated Site B",
            site=SiteEffects(
                snr=40.0,
                transmit_calibration=0.90,
                transmit_centre_gain=0.18,
                transmit_width_mm=70.0,
                transmit_tilt=(-0.02, 0.02, 0.03),
                receive_centre_gain=0.10,
                receive_periphery_gain=0.45,
                receive_tilt=(-0.04, 0.02, 0.05),
                receiver_gain=1500.0,
                field_offset_mm=(-3.0, 4.0, -6.0),
            ),
        ),
        Scanner(
            key="domain2",
            domain="Domain 2",
            manufacturer="Siemens",
            model="MAGNETOM Vision",
            field_strength=1.5,
            matrix=(128, 256, 256),
            voxel_size=(1.25, 1.0, 1.0),
            protocol=_VISION_PROTOCOL,
            inversion_time_known=True,
            serial_number="21305",
            station_name="VISION-C",
            institution="Simulated Site C",
            site=SiteEffects(
                snr=18.0,
                transmit_calibration=1.02,
                transmit_centre_gain=0.06,
                transmit_width_mm=80.0,
                transmit_tilt=(0.01, 0.0, -0.02),
                receive_centre_gain=0.04,
                receive_periphery_gain=0.0,
                receive_tilt=(0.0, -0.08, 0.10),
                receiver_gain=600.0,
                field_offset_mm=(0.0, 6.0, -12.0),
            ),
        ),
        Scanner(
            key="domain3",
            domain="Domain 3",
            manufacturer="Siemens",
            model="Biograph_mMR",
            field_strength=3.0,
            matrix=(176, 240, 256),
            voxel_size=(1.2, 1.05, 1.05),
            protocol=_VIDA_MMR_PROTOCOL,
            inversion_time_known=True,
            serial_number="51012",
            station_name="MMR-D",
            institution="Simulated Site D",
            site=SiteEffects(
                snr=22.0,
                transmit_calibration=1.12,
                transmit_centre_gain=0.36,
                transmit_width_mm=60.0,
                transmit_tilt=(0.0, -0.05, 0.02),
                receive_centre_gain=0.40,
                receive_periphery_gain=0.05,
                receive_tilt=(0.05, -0.06, 0.0),
                receiver_gain=1100.0,
                field_offset_mm=(4.0, -8.0, 10.0),
            ),
        ),
        Scanner(
            key="domain4",
            domain="Domain 4",
            manufacturer="Siemens",
            model="TrioTim",
            field_strength=3.0,
            matrix=(176, 256, 256),
            voxel_size=(1.0, 1.0, 1.0),
            protocol=_TRIO_PROTOCOL,
            inversion_time_known=True,
            serial_number="35287",
            station_name="TRIO-E",
            institution="Simulated Site E",
            site=SiteEffects(
                snr=25.0,
                transmit_calibration=1.0,
                transmit_centre_gain=0.28,
                transmit_width_mm=68.0,
                transmit_tilt=(-0.04, 0.03, 0.02),
                receive_centre_gain=0.22,
                receive_periphery_gain=0.20,
                receive_tilt=(-0.06, -0.05, 0.06),
                receiver_gain=850.0,
                field_offset_mm=(-4.0, 6.0, 0.0),
            ),
        ),
    )
}

TARGET = "target"


def transmit_field(site: SiteEffects, points_mm: np.ndarray) -> np.ndarray:
    """Relative B1+ (flip angle scale) at scanner coordinates ``(N, 3)``.

    The dielectric standing wave of 3 T heads raises B1+ in the centre of the head and lowers
    it at the periphery; at 1.5 T the effect is small.
    """
    offset = points_mm - np.asarray(site.field_offset_mm)
    bump = np.exp(-np.einsum("ij,ij->i", offset, offset) / (2.0 * site.transmit_width_mm**2))
    tilt = offset @ np.asarray(site.transmit_tilt) / 100.0
    return site.transmit_calibration * (1.0 + site.transmit_centre_gain * (bump - 0.5) + tilt)


def receive_field(site: SiteEffects, points_mm: np.ndarray) -> np.ndarray:
    """Relative B1- (receive sensitivity, positive) at scanner coordinates ``(N, 3)``.

    Centre brightening shares the transmit field's shape; the array coil adds sensitivity that
    grows with distance from the magnet's axis (the elements surround the head).
    """
    offset = points_mm - np.asarray(site.field_offset_mm)
    bump = np.exp(-np.einsum("ij,ij->i", offset, offset) / (2.0 * site.transmit_width_mm**2))
    radial = (offset[:, 0] ** 2 + offset[:, 1] ** 2) / 90.0**2
    tilt = offset @ np.asarray(site.receive_tilt) / 100.0
    return np.exp(site.receive_centre_gain * bump + site.receive_periphery_gain * radial + tilt)
