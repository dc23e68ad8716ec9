"""The wxcs Windows agent: drives the WeChat desktop client beside a customer-service PC.

Plain Python — it never imports Django. `python -m agent --config agent.yaml` on Windows,
`python -m agent --simulate` anywhere (the simulator driver with scripted customers).
"""

__version__ = "1.0.0"
