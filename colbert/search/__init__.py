"""Search: index loading, PLAID candidate generation and pruning, exact scoring, rankings.

`colbert.searcher.Searcher` is the public entry point; the modules here are its parts.
"""
