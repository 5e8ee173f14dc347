"""The frame loop's parts beside pipeline.SourceRun: the frame jobs and the caption stores."""
