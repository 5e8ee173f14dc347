"""The watch page's static files (index.html, watch.css, watch.js), served by video_summarizer.watch."""
