"""The paper's protocol (``protocol="paper"``): its prompt texts, observation formats and step rules."""
