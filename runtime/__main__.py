from digitpipe.runtime.cli import run

run()
