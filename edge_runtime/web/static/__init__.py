"""The web view's page, script and styles (package data; a package so setuptools ships it)."""
