"""Pure batch transforms: a frozen config plus `__call__(pa.Table) -> pa.Table`; no Ray, no file I/O."""
