@echo off
rem wxcs WeChat agent for Windows. First run: creates .venv-agent, installs the agent and the
rem WeChat libraries, copies agent\agent.example.yaml to agent.yaml and opens it for editing.
rem Then: double-click again (or run from cmd). Extra arguments go to the agent, e.g. --check-config.
setlocal
cd /d "%~dp0"

if not exist ".venv-agent\Scripts\python.exe" (
    echo Creating .venv-agent ...
    py -3.11 -m venv .venv-agent 2>nul || python -m venv .venv-agent || goto :nopython
    ".venv-agent\Scripts\python.exe" -m pip install --upgrade pip
    ".venv-agent\Scripts\python.exe" -m pip install -r requirements\agent-windows.txt || goto :failed
)

if not exist "agent.yaml" (
    copy /y "agent\agent.example.yaml" "agent.yaml" >nul
    echo agent.yaml created: fill in server.url, server.agent_id and driver.watch_chats,
    echo and store the agent's api_key once with:  setx WXCS_AGENT_SECRET "the-api-key"
    notepad agent.yaml
    exit /b 1
)

if "%WXCS_AGENT_SECRET%"=="" (
    echo WXCS_AGENT_SECRET is not set. Run:  setx WXCS_AGENT_SECRET "the-api-key"  and open a new window.
    exit /b 1
)

".venv-agent\Scripts\python.exe" -m agent --config agent.yaml %*
set rc=%errorlevel%
rem 3: another agent already runs from this folder; keep the window open so its message can be read.
if "%rc%"=="3" pause
exit /b %rc%

:nopython
echo Python 3.11 was not found. Install it from python.org (tick "Add python.exe to PATH") and run again.
exit /b 1

:failed
echo Installing the agent's requirements failed; see the messages above.
exit /b 1
