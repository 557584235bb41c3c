"""``python -m lightseg`` runs the CLI."""

from lightseg.cli import console_main

if __name__ == "__main__":
    console_main()
