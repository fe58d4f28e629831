"""d2ft.simulator: predicts what a plan costs on a cluster, as a timeline.

Imports ``d2ft`` only (never torch or ``runtime``). The graph-based simulator and the
sweep API are built on ``d2ft.cost.CostModel.tasks_and_messages``; until they land, the
analytical ``d2ft.CostModel`` is the prediction path.
"""
