"""The worker side: the subscribers file, the consumer loop, the retry ladder, the HTTP
forwarder, the message handed to handlers, and the DLQ tools. Never imports the receiving
side."""
