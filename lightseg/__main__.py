"""``python -m lightseg`` runs the CLI (``torchrun ... -m lightseg fit ...``, ``srun python -m lightseg ...``)."""

from lightseg.entry import console_main

if __name__ == "__main__":
    console_main()
