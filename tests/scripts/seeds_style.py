# A command-line script written the way the seeds' scripts were: paths glued by concatenation,
# sys.argv[4] read as the execution object, a bare except, quit() right after printing the result.
# ruff: noqa: E722, I001 - written in the seeds' manner on purpose
import sys
import json
import pandas as pd

filename = sys.argv[1]
filepath = sys.argv[2]
writepath = sys.argv[3]
request = json.loads(sys.argv[4])

try:
    pathToData = filepath + filename
    df = pd.read_csv(pathToData)
    for column in request['columnsToRemove']:
        df = df.drop(column, axis=1)
    outputName = request.get('outputFileName', 'encoded_' + filename)
    df.to_csv(writepath + outputName, index=False)
    print('Wrote ' + str(len(df)) + ' rows to ' + outputName)
    result = {'status': 200, 'message': 'encoded', 'rows': len(df), 'columns': list(df.columns)}
except:
    result = {'status': 500, 'message': 'Could not encode ' + filepath + filename}

print(json.dumps(result))
quit()
