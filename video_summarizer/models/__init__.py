"""Model backends: the in-process caption model and the helpers both model clients share."""
