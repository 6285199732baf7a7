"""The latency-budget search: the most accurate compressed model that meets a latency budget on a
named device (measured where it runs, estimated where it does not), and the accuracy evaluation it
rests on.

:mod:`.data` reads labelled data and checks it against a model, :mod:`.evaluate` scores a model
(top-1/top-5, agreement and SQNR against a reference), :mod:`.latency` times a candidate,
:mod:`.recipe` is a replayable list of compression steps, :mod:`.search` runs the Optuna search and
:mod:`.plot` draws its Pareto front. Optuna and matplotlib are imported only when used.
"""
