"""``kernel``: the command line client of the REST API (docs/cli.md).

It never imports the server or the agent. Start-up time is part of the product: the exec
path (``main`` → ``execute``) imports only the standard library's cheapest modules; click is
imported for every other command (see docs/cli.md, "Start-up").
"""
