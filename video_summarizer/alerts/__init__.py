"""Watch rules on captions and motion, and notifications sent over MQTT (Home Assistant) and webhooks."""
