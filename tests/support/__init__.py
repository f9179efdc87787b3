"""What the tests share: the clock, processes they start, live servers, the fake France Travail, the SMTP sink,
factories for persons, files and events."""
