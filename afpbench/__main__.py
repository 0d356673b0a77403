"""``python -m afpbench`` (the form torchrun and accelerate launch use)."""

from afpbench.cli import main

if __name__ == "__main__":
    main()
