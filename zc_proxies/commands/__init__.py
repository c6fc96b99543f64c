"""Subcommands of the ``zcbench`` CLI, one module each (see ``zc_proxies.cli``)."""
