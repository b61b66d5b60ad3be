"""The enrollment pipeline: one function per stage (check, track, segment, train, audio2expr, eval), in order."""
