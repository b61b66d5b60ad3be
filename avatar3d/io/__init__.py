"""Media decode/encode, atomic writes, PLY, and the avatar directory's layout and manifest."""
