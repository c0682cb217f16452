"""Planning, routing, dispatching and sweeping: how chunks reach workers and come back."""
