from mpl_runner.cli import cli

cli()
