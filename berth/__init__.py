"""berth: a small company's whole self-hosted stack as a Pulumi program for its own Docker hosts."""
