"""Imported by ``instructiongpt4-autoload.pth`` at interpreter start-up: installs the host import
hook of :mod:`lavis_plugins.autoload` (unless ``IGPT4_AUTOLOAD=0``). Never fails the start-up."""
try:
    from lavis_plugins.autoload import install

    install()
except Exception as _error:  # noqa: BLE001 - a broken plugin must not break every Python start
    import sys

    sys.stderr.write(f"instructiongpt4: autoload hook not installed ({_error})\n")
