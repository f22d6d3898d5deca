"""Architecture search of distillation students, as its own package.

Zero-shot (MAE-NAS): ``space`` (structures as data), ``measure`` (params, MACs, layers, budget),
``score`` (entropy, closed form), ``latency`` (per-operator table), ``zero_shot`` +
``search_state`` (evolution, resume). Trained (SM-NAS): ``structural`` (``Candidate`` genes),
``channel_plan`` + ``modular`` (the modular level), ``proxy`` (sizes, latency, short training),
``trained_search`` (evolution), ``levels`` (the levels from a recipe), ``pareto``, ``results``.
``blocks`` turns a structure into modules, ``presets`` finds the ``structure.json`` presets that
packages ship, ``checks`` checks a recipe's ``search:`` section when it is loaded.

The search reaches detectors through the model registry by name (``smnas``, presets), never by
importing a student or teacher module. Importing this package imports nothing else.
"""
