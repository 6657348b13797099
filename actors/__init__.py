"""The concurrent system: one trio task per actor, the message fabric and the
scheduler. The only layer that awaits.
"""
