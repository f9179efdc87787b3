"""`python -m app` is `passerelle`."""

from app.cli import main

main()
