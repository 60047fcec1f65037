from mpl_runner.run import cli

cli()
