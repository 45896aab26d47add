"""`lightkit ship`: fit, test, distil, QAT, export, evaluate and benchmark in one resumable run, with a report.

A pipeline over the other `lightkit` commands, declared as the `ship:` section of a config
(settings), each stage skipped when it finished before with the same inputs (state), each one a
call of an existing command (stages), and a report of everything on one page (report). It sits
between the command line and the export package: it runs the commands it is handed (the `cli` of
lightkit.cli.main) and trains, exports or scores nothing itself.
"""
