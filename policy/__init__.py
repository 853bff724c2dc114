"""berth's CrossGuard policy pack: the rules in policy/rules.py, the pack in policy/__main__.py."""
