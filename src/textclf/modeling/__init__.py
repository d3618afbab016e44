"""The classifier shared by train, evaluate and export: build, batch, score, save."""
