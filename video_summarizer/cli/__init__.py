"""The click side of the commands: the group with a default command, the option groups, the error line.

Only real_time_summarizer.py imports it; the rest of the package never imports click's objects.
"""
