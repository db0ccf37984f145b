"""Everything that talks to Mintsoft: the API client, connect actions, the webhook
simulator and the doctor's checks."""
