"""Functions: what Outcrop runs where Bedrock runs an AWS Lambda function (an agent's action group).

A function is a URL that Outcrop POSTs the event to, or a Python entry point run in a child process;
either way its ARN has Lambda's shape, so it goes where Bedrock expects one (`actionGroupExecutor.lambda`).
Kept light: `outcrop.functions.runner` is imported by every child process.
"""
