"""Files shipped inside the package (the result schema, the demo config). A package of its own,
so that setuptools lists it and ships its package_data instead of warning that it is ignored."""
