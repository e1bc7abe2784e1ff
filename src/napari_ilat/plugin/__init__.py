"""The napari plugin: dock widget, layer adapters, sample data, console helper (all Qt/napari code)."""
