"""The tail service: ``splitwire cloud`` serves the tail halves of plans to many edge sessions."""
