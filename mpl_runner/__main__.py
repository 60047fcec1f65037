from mpl_runner.cli.main import cli

cli()
