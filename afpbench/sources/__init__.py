"""Where inputs come from: caption files, image folders, archives, HF datasets, bundled photos."""
