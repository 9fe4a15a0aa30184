"""Real peers the tests start: an MQTT broker and KITTY service processes."""
