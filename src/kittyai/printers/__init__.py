"""Async clients for the print servers of the shop's 3D printers: OctoPrint and Moonraker."""
