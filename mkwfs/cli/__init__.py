"""The command line: argv/env/config file -> Config, the commands, prefetch."""
