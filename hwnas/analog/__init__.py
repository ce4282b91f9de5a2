"""Analog in-memory computing flows through aihwkit: a graph's placed layers (`map-analog`) on
simulated PCM crossbar tiles, programmed and read at times after programming.

    from hwnas.analog.convert import save_analog_state, to_analog
    from hwnas.analog.evaluate import drift_accuracy

    model = to_analog(graph, "analog-pcm")       # aihwkit layers where map-analog placed them
    points = drift_accuracy(model, x, y, [1, 86400], repeats=5)
    save_analog_state(model, Path("model.aihwkit.pt"))  # torch.load(..., weights_only=True)

The package itself imports nothing heavy (`hwnas.analog.times` parses a command line's times
without torch); `convert` and `evaluate` load torch and aihwkit.
"""
