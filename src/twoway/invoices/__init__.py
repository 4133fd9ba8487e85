"""Our invoice catalog: invoices and their ordered lines, the second kind of synced record."""
