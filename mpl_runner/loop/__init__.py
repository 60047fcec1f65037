"""One run: check, build, restore, train, finish (run.py); the loop itself and the object writing the record."""
