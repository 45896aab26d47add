"""The command layer: the `lightkit` command (main.py) and the `lightkit ship` pipeline (ship/).

Nothing below this layer imports it."""
