"""AMQP method handlers of a channel, one module per class (mixed into core.channel.Channel)."""
