"""Teacher, student and scripted-expert policies behind one batched interface (to come: issue 5)."""
