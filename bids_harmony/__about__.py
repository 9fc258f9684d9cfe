"""Version of the package (one place, read by setup.py and the CLI), and of what it runs on."""
__version__ = "0.1.0.dev0"

#: The packages whose versions a model file or an output sidecar records.
RECORDED_PACKAGES = ("bids_harmony", "torch", "nflows", "nipype", "niworkflows", "pybids", "antspyx",
                     "nibabel", "numpy")


def software_versions() -> dict[str, str]:
    """Python's and the installed versions of :data:`RECORDED_PACKAGES`, to tell later which
    code made a file."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
