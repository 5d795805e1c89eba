"""Labs on one machine: manager processes on their own loopback addresses, and the demo."""
