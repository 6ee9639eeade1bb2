"""A second service's migrations (table ``notes``), to test services sharing one database."""
