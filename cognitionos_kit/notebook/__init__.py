"""Notebook views over a Kit: widgets, live dashboard, magics. Imported only when used."""
