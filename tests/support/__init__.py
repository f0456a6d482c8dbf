"""The one test harness: ports, processes, agents, servers, databases and API clients shared by
every area's tests (fixtures.py is the pytest plugin that offers them as fixtures)."""
