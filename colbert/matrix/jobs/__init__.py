"""The matrix's job scripts, run as files by each environment's interpreter (never imported).

They live in a folder of their own because a script's folder goes first on its sys.path: nothing
else here may shadow a module the job imports.
"""
